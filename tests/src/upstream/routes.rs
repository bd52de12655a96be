//! The scripted upstream's HTTP handlers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::answers::{self, Answer, Api};
use super::script::{Gate, RecordedRequest, Reply, Script};
use crate::sse;

/// The models `/v1/models` lists.
pub const MODELS: [&str; 2] = ["test-model", "test-model-2"];

pub(crate) type Shared = Arc<Mutex<Script>>;

pub(crate) fn router(script: Shared) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/embeddings", post(embeddings))
        .fallback(not_found)
        .with_state(script)
}

async fn chat(State(script): State<Shared>, request: Request) -> Response {
    complete(Api::Chat, script, request).await
}

async fn completions(State(script): State<Shared>, request: Request) -> Response {
    complete(Api::Completions, script, request).await
}

async fn models(State(script): State<Shared>, request: Request) -> Response {
    record(&script, request).await;
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "cachet-tests"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn embeddings(State(script): State<Shared>, request: Request) -> Response {
    let body = record(&script, request).await.unwrap_or(Value::Null);
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map_or_else(|| item.to_string(), str::to_owned)
            })
            .collect(),
        _ => return bad_request("'input' is a required property"),
    };
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = answers::fake_embedding(text);
            let embedding = if base64 {
                json!(answers::base64_f32(&vector))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let model = body.get("model").cloned().unwrap_or(Value::Null);
    let tokens = inputs.len();
    axum::Json(json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}

async fn not_found(State(script): State<Shared>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    record(&script, request).await;
    let body = answers::error_body(
        &format!("Unknown request URL: {path}"),
        "invalid_request_error",
        Some("unknown_url"),
    );
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

async fn complete(api: Api, script: Shared, request: Request) -> Response {
    let caller = header_text(request.headers(), header::AUTHORIZATION.as_str())
        .map(|auth| auth.trim_start_matches("Bearer ").to_owned())
        .unwrap_or_default();
    let Some(body) = record(&script, request).await else {
        return bad_request("We could not parse the JSON body of your request");
    };
    let (reply, call) = {
        let mut script = script.lock();
        script.completion_calls += 1;
        (script.next_reply(), script.completion_calls)
    };
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let question = answers::question(api, &body);
    let answer = Answer {
        api,
        id: match api {
            Api::Chat => format!("chatcmpl-upstream-{call}"),
            Api::Completions => format!("cmpl-upstream-{call}"),
        },
        created,
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("test-model")
            .to_owned(),
        prompt_tokens: question.split_whitespace().count() as u64,
    };
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let usage = body.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
    let (reply, caller_headers) = match reply {
        Reply::WithCallerHeaders(inner) => (*inner, true),
        other => (other, false),
    };
    let mut response = respond(
        reply,
        &answer,
        &question,
        call,
        stream,
        usage,
        Duration::ZERO,
    )
    .await;
    if caller_headers {
        for (name, value) in [
            ("set-cookie", format!("session={caller}; HttpOnly")),
            ("x-ratelimit-remaining-requests", caller.clone()),
            ("openai-organization", format!("org-{caller}")),
        ] {
            if let Ok(value) = header::HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
}

async fn respond(
    reply: Reply,
    answer: &Answer,
    question: &str,
    call: u64,
    stream: bool,
    usage: bool,
    pace: Duration,
) -> Response {
    let (text, finish_reason, cut) = match reply {
        Reply::Delayed(delay, inner) => {
            tokio::time::sleep(delay).await;
            return Box::pin(respond(
                *inner, answer, question, call, stream, usage, delay,
            ))
            .await;
        }
        Reply::Held(gate, inner) => {
            gate.passed().await;
            return Box::pin(respond(*inner, answer, question, call, stream, usage, pace)).await;
        }
        Reply::Redirect(location) => {
            let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
            if let Ok(value) = header::HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            return response;
        }
        // Unwrapped by `complete` when outermost; deeper it adds nothing.
        Reply::WithCallerHeaders(inner) => {
            return Box::pin(respond(*inner, answer, question, call, stream, usage, pace)).await;
        }
        Reply::Error {
            status,
            message,
            kind,
            code,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = answers::error_body(&message, &kind, code.as_deref());
            return (status, axum::Json(body)).into_response();
        }
        Reply::Echo => (
            format!("Answer {call} to: {question}"),
            Some("stop".to_owned()),
            false,
        ),
        Reply::Text(text) => (text, Some("stop".to_owned()), false),
        Reply::Finish {
            text,
            finish_reason,
        } => (text, Some(finish_reason), false),
        Reply::Cut(text) => (text, None, true),
        Reply::Unfinished(text) => (text, None, false),
        Reply::Gated {
            before,
            after,
            gate,
        } => {
            if !stream {
                gate.passed().await;
                return axum::Json(answer.body(&(before + &after), Some("stop"))).into_response();
            }
            return gated_stream(answer, &before, &after, gate, usage);
        }
    };
    if !stream {
        let body = answer.body(&text, finish_reason.as_deref());
        if cut {
            // Half of the JSON, then the connection breaks.
            let json = body.to_string();
            let half = Bytes::from(json.as_bytes()[..json.len() / 2].to_vec());
            return broken_body(vec![half], "application/json", pace);
        }
        return axum::Json(body).into_response();
    }
    let mut events: Vec<Bytes> = answer
        .chunks(&text, finish_reason.as_deref(), usage && !cut)
        .iter()
        .map(|chunk| Bytes::from(sse::event(&chunk.to_string())))
        .collect();
    if cut {
        return broken_body(events, "text/event-stream", pace);
    }
    events.push(Bytes::from(sse::event("[DONE]")));
    let body = futures::stream::iter(events)
        .then(move |event| async move {
            // Even a zero sleep waits for the timer's next millisecond tick, which would add
            // a millisecond per chunk to every undelayed stream (and to the benchmark's
            // direct baseline).
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
            Ok::<_, Infallible>(event)
        })
        .boxed();
    sse_response(Body::from_stream(body))
}

/// `before`'s chunks, a wait at the gate, then `after`'s chunks, `stop` and `[DONE]`.
fn gated_stream(answer: &Answer, before: &str, after: &str, gate: Gate, usage: bool) -> Response {
    let event = |chunk: &Value| Ok::<_, Infallible>(Bytes::from(sse::event(&chunk.to_string())));
    let first: Vec<_> = answer
        .chunks(before, None, false)
        .iter()
        .map(event)
        .collect();
    let mut rest: Vec<_> = answer
        .chunks(after, Some("stop"), usage)
        .iter()
        // The role chunk was sent with `before`.
        .skip(usize::from(answer.api == Api::Chat))
        .map(event)
        .collect();
    rest.push(Ok(Bytes::from(sse::event("[DONE]"))));
    let wait = futures::stream::once(async move { gate.passed().await })
        .filter_map(|()| async { None::<Result<Bytes, Infallible>> });
    let body = futures::stream::iter(first)
        .chain(wait)
        .chain(futures::stream::iter(rest));
    sse_response(Body::from_stream(body))
}

/// A chunked body that sends `parts` and then fails, which makes hyper abort the
/// connection without the terminating chunk: the client sees a body cut mid-way.
fn broken_body(parts: Vec<Bytes>, content_type: &'static str, pace: Duration) -> Response {
    let parts = futures::stream::iter(parts.into_iter().map(Ok::<_, std::io::Error>));
    let failure = futures::stream::once(async move {
        // Give the client time to receive what was sent before the connection drops.
        tokio::time::sleep(pace.max(Duration::from_millis(50))).await;
        Err(std::io::Error::other("scripted cut"))
    });
    let body = Body::from_stream(parts.chain(failure));
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn sse_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    response
}

fn bad_request(message: &str) -> Response {
    let body = answers::error_body(message, "invalid_request_error", None);
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// Records the request and returns its JSON body, if it had one that parsed.
async fn record(script: &Shared, request: Request) -> Option<Value> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20).await.ok();
    let body: Option<Value> = bytes.and_then(|b| serde_json::from_slice(&b).ok());
    let recorded = RecordedRequest {
        path: parts.uri.path().to_owned(),
        authorization: header_text(&parts.headers, header::AUTHORIZATION.as_str()),
        body: body.clone(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect(),
    };
    script.lock().requests.push(recorded);
    body
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}
