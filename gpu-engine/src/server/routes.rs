//! Route handlers: completions, chat completions, models, health, metrics.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::openai::{ChatRequest, CommonParams, CompletionRequest, PromptInput, parse_body};
use super::stream::{Endpoint, ResponseMeta, collect, sse};
use crate::engine::GenerateRequest;

fn check_model(state: &AppState, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        Some(name) if name != state.engine.info().model_name => {
            Err(ApiError::model_not_found(name))
        }
        _ => Ok(()),
    }
}

async fn respond(
    state: &AppState,
    headers: &HeaderMap,
    endpoint: Endpoint,
    prompt_ids: Vec<u32>,
    common: &CommonParams,
    max_tokens: Option<usize>,
    default_max_tokens: usize,
) -> Result<Response, ApiError> {
    let params = common.sampling(max_tokens, default_max_tokens)?;
    let vocab_size = state.engine.info().vocab_size;
    if let Some(id) = prompt_ids.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(ApiError::bad_request(format!(
            "token id {id} is outside the vocabulary of {vocab_size}"
        )));
    }
    let request = GenerateRequest {
        prompt_ids,
        params,
        salt: state.tenants.salt(headers),
    };
    let events = state.engine.generate(request).await?;
    let meta = ResponseMeta::new(endpoint, state.engine.info().model_name.clone());
    if common.stream {
        let include_usage = common
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        Ok(sse(meta, events, include_usage).into_response())
    } else {
        Ok(Json(collect(&meta, events).await?).into_response())
    }
}

pub async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CompletionRequest = parse_body(&body)?;
    check_model(&state, request.common.model.as_deref())?;
    let codec = &state.engine.info().codec;
    let prompt_ids = match request.prompt {
        PromptInput::Text(text) => codec.encode(&text, true)?,
        PromptInput::Texts(texts) => match &texts[..] {
            [text] => codec.encode(text, true)?,
            _ => {
                return Err(ApiError::bad_request(
                    "exactly one prompt per request is supported",
                ));
            }
        },
        PromptInput::Ids(ids) => ids,
    };
    // OpenAI's default for completions.
    let max_tokens = request.common.max_tokens;
    respond(
        &state,
        &headers,
        Endpoint::Completion,
        prompt_ids,
        &request.common,
        max_tokens,
        16,
    )
    .await
}

pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ChatRequest = parse_body(&body)?;
    check_model(&state, request.common.model.as_deref())?;
    let codec = &state.engine.info().codec;
    let text = codec.render_chat(&request.messages()?)?;
    // The template already wrote the special tokens it wants.
    let prompt_ids = codec.encode(&text, false)?;
    let max_tokens = request.max_completion_tokens.or(request.common.max_tokens);
    // Without a limit, a chat answer may run to the end of the context.
    let default_max_tokens = state.engine.info().max_context;
    respond(
        &state,
        &headers,
        Endpoint::Chat,
        prompt_ids,
        &request.common,
        max_tokens,
        default_max_tokens,
    )
    .await
}

pub async fn models(State(state): State<AppState>) -> Json<serde_json::Value> {
    let info = state.engine.info();
    Json(json!({
        "object": "list",
        "data": [{
            "id": info.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "cachet",
            "max_model_len": info.max_context,
        }],
    }))
}

/// Healthy while the worker thread answers; a supervisor restarts the engine otherwise.
pub async fn health(State(state): State<AppState>) -> Response {
    match state.engine.stats().await {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(_) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "engine worker stopped"})),
        )
            .into_response(),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Result<String, ApiError> {
    // Refresh the gauges so an idle engine still reports its current pool.
    let stats = state.engine.stats().await?;
    metrics::gauge!("cachet_engine_kv_blocks_free").set(stats.kv_blocks_free as f64);
    metrics::gauge!("cachet_engine_kv_blocks_used")
        .set((stats.kv_blocks_total - stats.kv_blocks_free) as f64);
    metrics::gauge!("cachet_engine_queue_length").set(stats.n_waiting as f64);
    Ok(state.metrics.render())
}
