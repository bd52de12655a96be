//! The HTTP routes: cached completions, passthrough routes, health and metrics.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use crate::answer::{self, CachedAnswer, replay_json, replay_sse};
use crate::cache::{Hit, HitKind, Plan};
use crate::error::ApiError;
use crate::flight::{Flight, FlightKey};
use crate::keys::Tenant;
use crate::request::{CacheRequest, Route};
use crate::shadow::ShadowRequest;
use crate::state::AppState;
use crate::upstream::{relay, response_headers, strip_per_caller};

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
    let plan = cache.plan(&parsed, &parts.headers).await;

    let mut vector = plan.vector.clone();
    if plan.lookup {
        let lookup = cache.lookup(&parsed, &plan).await;
        if let Some(hit) = lookup.hit {
            count(route, &plan, hit_label(hit.kind));
            if hit.kind == HitKind::Semantic && state.shadows.draw(cache, &plan.category) {
                state.shadows.spawn(
                    state.cache_handle(),
                    state.upstream.clone(),
                    ShadowRequest {
                        category: plan.category.clone(),
                        route,
                        stream: parsed.stream,
                        headers: parts.headers.clone(),
                        body: bytes.clone(),
                        tenant: engine_tenant(&plan),
                        cached: hit.answer.response.clone(),
                    },
                );
            }
            return Ok(hit_response(route, &parsed, &plan, hit));
        }
        vector = lookup.vector;
    }

    let label = if plan.lookup { "miss" } else { "bypass" };
    count(route, &plan, label);
    if plan.bypass.is_some() {
        let tenant = engine_tenant(&plan);
        let upstream = state
            .upstream
            .send(
                Method::POST,
                route.upstream_path(),
                &parts.headers,
                bytes,
                &tenant,
            )
            .await?;
        let mut response = relay(upstream);
        decorate(response.headers_mut(), &plan, label, None, None);
        return Ok(response);
    }

    let key = FlightKey {
        caller: plan.caller.as_str().to_owned(),
        exact_key: plan.key.to_hex(),
        stream: parsed.stream,
        include_usage: parsed.include_usage,
        store: plan.store,
    };
    let (flight, leader) = state.flights.join(&key);
    if leader {
        let miss = Miss {
            state: state.clone(),
            key,
            request: parsed,
            plan: plan.clone(),
            vector,
            headers: parts.headers,
            body: bytes,
        };
        tokio::spawn(miss.run(Arc::clone(&flight)));
    } else {
        metrics::counter!("cachet_coalesced_total", "category" => plan.category.clone())
            .increment(1);
    }
    let (mut response, served_as) = flight.response().await?;
    if !leader {
        strip_per_caller(response.headers_mut());
    }
    let entry = plan.store.then(|| plan.key.entry_id());
    decorate(
        response.headers_mut(),
        &plan,
        served_as.unwrap_or(label),
        None,
        entry,
    );
    Ok(response)
}

/// A cache miss's upstream request, run apart from any client so that a disconnect never
/// cancels it for the requests coalesced onto it.
struct Miss {
    state: AppState,
    key: FlightKey,
    request: CacheRequest,
    plan: Plan,
    vector: Option<Vec<f32>>,
    headers: HeaderMap,
    body: Bytes,
}

impl Miss {
    async fn run(self, flight: Arc<Flight>) {
        let Miss {
            state,
            key,
            request,
            plan,
            vector,
            headers,
            body,
        } = self;
        let route = request.route;
        // The entry may have been stored between this request's lookup and its flight: a
        // flight lands only after its answer is stored, so this check closes that window.
        if plan.lookup
            && let Some(answer) = state.cache().peek_exact(&plan).await
        {
            let events = replay_bytes(route, &request, &answer);
            flight.set_head(Ok((StatusCode::OK, events.0, Some("hit-exact"))));
            flight.push(events.1);
            flight.finish(true);
            state.flights.land(&key);
            return;
        }
        let started = std::time::Instant::now();
        let upstream = match state
            .upstream
            .send(
                Method::POST,
                route.upstream_path(),
                &headers,
                body,
                &engine_tenant(&plan),
            )
            .await
        {
            Ok(upstream) => upstream,
            Err(failure) => {
                flight.set_head(Err(failure));
                state.flights.land(&key);
                return;
            }
        };
        let status = upstream.status();
        flight.set_head(Ok((status, response_headers(&upstream), None)));
        let max_bytes = state.cache().config().cache.max_entry_bytes;
        let mut keep = plan.store && status == StatusCode::OK;
        let mut copy = Vec::new();
        let mut stream = upstream.bytes_stream();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => {
                    if keep && copy.len() + chunk.len() <= max_bytes {
                        copy.extend_from_slice(&chunk);
                    } else {
                        keep = false;
                    }
                    flight.push(chunk);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "upstream response broke off");
                    flight.finish(false);
                    state.flights.land(&key);
                    return;
                }
            }
        }
        flight.finish(true);
        if keep {
            match answer::assemble(route, request.stream, &copy) {
                Some(response) => {
                    let cost = started.elapsed();
                    state
                        .cache()
                        .fill(&request, &plan, vector, response, cost)
                        .await;
                }
                None => tracing::debug!("answer not cached: incomplete or unsuccessful"),
            }
        }
        state.flights.land(&key);
    }
}

/// The tenant the bundled engine salts its prefix cache with: the caller's, as the cache uses
/// it. A keyless request the cache bypasses has no tenant at all, so it gets a salt of its
/// own and shares no cached prefix with anyone.
fn engine_tenant(plan: &Plan) -> String {
    if plan.bypass == Some("anonymous") {
        format!("anonymous-{:016x}", rand::random::<u64>())
    } else {
        plan.caller.as_str().to_owned()
    }
}

/// A stored answer as the headers and body a client of `request` expects.
fn replay_bytes(route: Route, request: &CacheRequest, answer: &CachedAnswer) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    if request.stream {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        (
            headers,
            Bytes::from(replay_sse(route, &answer.response, request.include_usage).concat()),
        )
    } else {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        (
            headers,
            Bytes::from(replay_json(route, &answer.response).to_string()),
        )
    }
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

fn decorate(
    headers: &mut HeaderMap,
    plan: &Plan,
    label: &'static str,
    similarity: Option<f32>,
    entry: Option<u64>,
) {
    let label = if plan.bypass.is_some() {
        "bypass"
    } else {
        label
    };
    headers.insert("x-cachet-cache", HeaderValue::from_static(label));
    if let Ok(category) = HeaderValue::from_str(&plan.category) {
        headers.insert("x-cachet-category", category);
    }
    if let Some(similarity) = similarity
        && let Ok(value) = HeaderValue::from_str(&format!("{similarity:.4}"))
    {
        headers.insert("x-cachet-similarity", value);
    }
    if let Some(reason) = plan.bypass {
        headers.insert("x-cachet-bypass", HeaderValue::from_static(reason));
    } else if plan.degraded {
        headers.insert(
            "x-cachet-bypass",
            HeaderValue::from_static("store-unavailable"),
        );
    }
    if let Some(id) = entry
        && let Ok(value) = HeaderValue::from_str(&format!("{id:016x}"))
    {
        headers.insert("x-cachet-entry", value);
    }
}

fn hit_response(route: Route, request: &CacheRequest, plan: &Plan, hit: Hit) -> Response {
    let (headers, body) = replay_bytes(route, request, &hit.answer);
    let mut response = Response::new(Body::from(body));
    *response.headers_mut() = headers;
    decorate(
        response.headers_mut(),
        plan,
        hit_label(hit.kind),
        Some(hit.similarity),
        Some(hit.id),
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
    let tenant = Tenant::from_headers(&parts.headers).unwrap_or_else(Tenant::anonymous);
    let upstream = state
        .upstream
        .send(parts.method, &path, &parts.headers, bytes, tenant.as_str())
        .await?;
    Ok(relay(upstream))
}

/// Always 200 while the gateway serves: a degraded store means uncached answers, not failures.
pub async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    let cache = state.cache();
    let categories: serde_json::Map<String, serde_json::Value> = cache
        .entries_per_category()
        .into_iter()
        .map(|(name, entries, bytes)| (name, json!({ "entries": entries, "bytes": bytes })))
        .collect();
    let store_up = cache.store().is_up();
    Json(json!({
        "status": if store_up { "ok" } else { "degraded" },
        "store": {
            "kind": cache.store().kind(),
            "state": if store_up { "up" } else { "down" },
        },
        "upstream": state.upstream.base_url(),
        "load": format!("{:?}", cache.load().state()).to_lowercase(),
        "categories": categories,
    }))
}

pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cache = state.cache();
    if let Some(token) = &cache.config().metrics_token {
        // Compared in constant time, as the admin token is.
        if !crate::admin::bearer(&headers).is_some_and(|presented| token.matches(presented)) {
            return Err(ApiError::MetricsUnauthorized);
        }
    }
    let load_state = cache.load().state();
    let config = cache.config();
    let policy = cache.policy();
    for (category, entries, bytes) in cache.entries_per_category() {
        metrics::gauge!("cachet_entries", "category" => category.clone()).set(entries as f64);
        metrics::gauge!("cachet_entry_bytes", "category" => category.clone()).set(bytes as f64);
        if let Some(cat) = config.category(&category) {
            let point = policy.operating_point(&category, load_state);
            metrics::gauge!("cachet_effective_threshold", "category" => category.clone())
                .set(f64::from(point.threshold.get()));
            metrics::gauge!("cachet_effective_ttl_seconds", "category" => category)
                .set(cat.effective_ttl(load_state).as_secs_f64());
        }
    }
    Ok(match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    })
}

pub async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(format!("{} {}", request.method(), request.uri().path()))
}
